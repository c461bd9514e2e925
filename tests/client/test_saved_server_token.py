"""A run that follows the saved server never sends its old token to a new server."""

from __future__ import annotations

from corteza.client.saved_server import follow_saved_server, save_server


def test_a_new_url_saved_without_a_token_gets_none() -> None:
    save_server("http://old.example:8000", token="old-secret-token")
    locate = follow_saved_server("http://old.example:8000", "old-secret-token")
    assert locate() == ("http://old.example:8000", "old-secret-token")
    save_server("http://new.example:8000")
    assert locate() == ("http://new.example:8000", None)


def test_a_new_url_saved_with_a_token_gets_that_token() -> None:
    save_server("http://old.example:8000", token="old-secret-token")
    locate = follow_saved_server("http://old.example:8000", "old-secret-token")
    save_server("http://new.example:8000", token="new-secret-token")
    assert locate() == ("http://new.example:8000", "new-secret-token")


def test_the_same_url_keeps_the_token_the_run_began_with_or_the_saved_one() -> None:
    save_server("http://same.example:8000", token="saved-token-12345")
    assert follow_saved_server("http://same.example:8000", "given-token-12345")() == (
        "http://same.example:8000",
        "given-token-12345",
    )
    assert follow_saved_server("http://same.example:8000", None)() == (
        "http://same.example:8000",
        "saved-token-12345",
    )
