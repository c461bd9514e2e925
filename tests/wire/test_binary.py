"""Binary batches: round trips in every dtype, exact words for every malformed body, a fuzz test."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corteza.wire import BatchError, ErrorType, validate_batch
from corteza.wire.binary import BATCH_CONTENT_TYPE, DecodedBatch, decode_batch, encode_batch

D = 8
RNG = np.random.default_rng(0)
X2 = RNG.uniform(-2, 2, size=(3, D)).astype(np.float32)
X3 = RNG.uniform(-2, 2, size=(3, 2, D)).astype(np.float32)
LABELS = [0, 1, 1]


def _raw(header: Any, buffer: bytes = b"", *, length: int | None = None) -> bytes:
    """A safetensors file written by hand, so that it can be broken on purpose."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + buffer


def _file(
    tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str] | None = None
) -> bytes:
    """A well-formed file of ``name: (dtype, shape, bytes)``, laid out in order."""
    header: dict[str, Any] = {"__metadata__": {"protocol": "1.0", **(metadata or {})}}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    return _raw(header, b"".join(data for _, _, data in tensors.values()))


def _good(**extra: tuple[str, list[int], bytes]) -> dict[str, tuple[str, list[int], bytes]]:
    return {
        "inputs": ("F32", [3, D], X2.astype("<f4").tobytes()),
        "anomaly_label": ("F32", [3], np.array(LABELS, "<f4").tobytes()),
        **extra,
    }


def _refused(data: bytes, **kwargs: Any) -> BatchError:
    with pytest.raises(BatchError) as info:
        decode_batch(data, input_dim=kwargs.pop("input_dim", D), **kwargs)
    return info.value


def _bf16(values: np.ndarray) -> np.ndarray:
    """What bfloat16 keeps of float32 values (round to nearest, ties to even)."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    upper = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return upper.astype(np.uint32).view(np.float32)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("inputs", [X2, X3], ids=["B,D", "B,T,D"])
def test_round_trip_without_extras(dtype: Any, inputs: np.ndarray) -> None:
    decoded = decode_batch(encode_batch(inputs, LABELS, dtype=dtype), input_dim=D)
    expected = {
        "f32": inputs,
        "f16": inputs.astype(np.float16).astype(np.float32),
        "bf16": _bf16(inputs),
    }[dtype]
    assert decoded == DecodedBatch(decoded.batch, wire_dtype=dtype)
    assert decoded.batch.inputs.dtype == np.float32
    assert decoded.batch.inputs.shape == inputs.shape
    np.testing.assert_array_equal(decoded.batch.inputs, expected)
    assert decoded.batch.labels.tolist() == [0.0, 1.0, 1.0]
    assert decoded.batch.epochs == 1


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("inputs", [X2, X3], ids=["B,D", "B,T,D"])
def test_round_trip_with_targets_and_metadata(dtype: Any, inputs: np.ndarray) -> None:
    dendrites = RNG.uniform(-1, 1, size=(3, 16)).astype(np.float32)
    coherence = RNG.uniform(-1, 1, size=(3, 64)).astype(np.float32)
    body = encode_batch(
        inputs,
        LABELS,
        epochs=5,
        batch_id="b-7",
        dtype=dtype,
        dendrite_target=dendrites,
        coherence_target=coherence,
        run_id="run-1",
        seq=41,
    )
    decoded = decode_batch(body, input_dim=D)
    assert (decoded.batch_id, decoded.run_id, decoded.seq) == ("b-7", "run-1", 41)
    assert decoded.batch.epochs == 5
    assert decoded.wire_dtype == dtype
    assert decoded.dendrite_target is not None
    assert decoded.coherence_target is not None
    np.testing.assert_array_equal(decoded.dendrite_target, dendrites)
    np.testing.assert_array_equal(decoded.coherence_target, coherence)


def test_decoded_arrays_are_writable_copies() -> None:
    """torch.from_numpy warns on read-only memory; the request body is read-only."""
    body = encode_batch(X2, LABELS, dendrite_target=np.zeros((3, 16)))
    decoded = decode_batch(body, input_dim=D)
    assert decoded.dendrite_target is not None
    for array in (decoded.batch.inputs, decoded.batch.labels, decoded.dendrite_target):
        assert array.flags.writeable
        assert array.flags.c_contiguous


def test_bf16_rounds_to_nearest_even() -> None:
    one = 1.0
    values = np.array(
        [[one, one + 2**-8, one + 3 * 2**-8, one + 2**-8 + 2**-20, -0.0, 3.0e38, 1e-40, 7.0]],
        np.float32,
    )
    decoded = decode_batch(encode_batch(values, [0], dtype="bf16"), input_dim=8)
    assert decoded.batch.inputs.tolist() == [
        [
            1.0,
            1.0,
            1.0 + 4 * 2**-8,
            1.0 + 2 * 2**-8,
            -0.0,
            float(_bf16(values)[0, 5]),
            float(_bf16(values)[0, 6]),
            7.0,
        ]
    ]


def test_the_header_carries_the_protocol_and_epochs() -> None:
    body = encode_batch(X2, LABELS, epochs=3, dtype="bf16", seq=0)
    (length,) = struct.unpack_from("<Q", body)
    header = json.loads(body[8 : 8 + length])
    assert header["__metadata__"] == {"protocol": "1.0", "epochs": "3", "seq": "0"}
    assert header["inputs"]["dtype"] == "BF16"
    assert header["anomaly_label"]["dtype"] == "F32"
    assert length % 8 == 0
    assert BATCH_CONTENT_TYPE == "application/x-corteza-batch"


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_the_reference_library_reads_what_we_write(dtype: Any) -> None:
    tensors = safetensors.numpy.load(encode_batch(X3, LABELS, dtype=dtype))
    assert tensors["inputs"].dtype == {"f32": np.float32, "f16": np.float16}[dtype]
    np.testing.assert_allclose(tensors["inputs"], X3, atol=2e-3)
    assert tensors["anomaly_label"].tolist() == [0.0, 1.0, 1.0]


def test_the_reference_library_reads_our_bf16() -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load

    tensors = load(encode_batch(X2, LABELS, dtype="bf16", dendrite_target=np.ones((3, 16))))
    assert tensors["inputs"].dtype == torch.bfloat16
    assert torch.equal(tensors["inputs"], torch.from_numpy(X2).bfloat16())
    assert torch.equal(tensors["dendrite_target"], torch.ones(3, 16))


def test_files_of_the_reference_writers_decode() -> None:
    body = safetensors.numpy.save(
        {"inputs": X2.astype(np.float16), "anomaly_label": np.array(LABELS, np.uint8)},
        metadata={"protocol": "1.0", "epochs": "2"},
    )
    decoded = decode_batch(body, input_dim=D)
    assert decoded.wire_dtype == "f16"
    assert decoded.batch.labels.tolist() == [0.0, 1.0, 1.0]
    assert decoded.batch.epochs == 2


def test_a_later_minor_version_is_accepted() -> None:
    decoded = decode_batch(
        _file(_good(), {"protocol": "1.7", "note": "extra keys are ignored"}), input_dim=D
    )
    assert decoded.batch.size == 3


def test_binary_and_json_say_the_same_words_as_validate_batch() -> None:
    x = X2.copy()
    x[1, 3] = np.nan
    with pytest.raises(BatchError) as direct:
        validate_batch(x, np.array(LABELS, np.float32), input_dim=D)
    for dtype in ("f32", "f16", "bf16"):
        err = _refused(encode_batch(x, LABELS, dtype=dtype))  # type: ignore[arg-type]
        assert (err.message, err.error_type, err.sample) == (
            direct.value.message,
            direct.value.error_type,
            direct.value.sample,
        )
    assert err.message == "Non-finite input: sample 1 contains NaN or Inf"


# ---------------------------------------------------------------- the encoder's refusals


def test_encoding_beyond_the_f16_range_is_refused() -> None:
    x = X2.copy()
    x[2, 0] = 70000.0
    with pytest.raises(BatchError) as info:
        encode_batch(x, LABELS, dtype="f16")
    assert (
        info.value.message == "inputs: sample 2 has values beyond the f16 range (±65504); send f32"
    )
    assert info.value.sample == 2
    encode_batch(x, LABELS, dtype="bf16")  # bf16 has float32's range
    x[2, 0] = 65519.0  # rounds down to 65504
    assert (
        decode_batch(encode_batch(x, LABELS, dtype="f16"), input_dim=D).batch.inputs[2, 0] == 65504
    )


def test_encoding_beyond_the_bf16_range_is_refused() -> None:
    x = X2.copy()
    x[1, 5] = -3.3962e38  # finite in f32, rounds to -inf in bf16
    with pytest.raises(BatchError) as info:
        encode_batch(x, LABELS, dtype="bf16")
    assert info.value.message == (
        "inputs: sample 1 has values beyond the bf16 range (±3.39e38); send f32"
    )
    x[1, 5] = np.inf  # already infinite: the server names it, in the usual words
    err = _refused(encode_batch(x, LABELS, dtype="bf16"))
    assert err.message == "Non-finite input: sample 1 contains NaN or Inf"


def test_encoder_checks_shapes_and_arguments() -> None:
    with pytest.raises(BatchError, match=r"^Expected 3 anomaly labels, got shape \[2\]$"):
        encode_batch(X2, [0, 1])
    with pytest.raises(
        BatchError, match=r"^inputs must be \(B, D\) or \(B, T, D\), got shape \[8\]$"
    ):
        encode_batch(X2[0], [0])
    with pytest.raises(
        BatchError, match=r"^dendrite_target must have shape \[3, N\], got \[2, 16\]$"
    ):
        encode_batch(X2, LABELS, dendrite_target=np.zeros((2, 16)))
    with pytest.raises(ValueError, match=r"^dtype must be 'f32', 'f16' or 'bf16', got 'f64'$"):
        encode_batch(X2, LABELS, dtype="f64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^seq must be a non-negative int, got -1$"):
        encode_batch(X2, LABELS, seq=-1)
    with pytest.raises(TypeError, match=r"^epochs must be an int, got float$"):
        encode_batch(X2, LABELS, epochs=1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- malformed bodies

GOOD = _file(_good())
HEADER_LENGTH = struct.unpack_from("<Q", GOOD)[0]
F32_ROWS = X2.astype("<f4").tobytes()
F32_LABELS = np.array(LABELS, "<f4").tobytes()

MALFORMED = [
    pytest.param(
        b"", "the body is empty; send a safetensors file (application/x-corteza-batch)", id="empty"
    ),
    pytest.param(b"\x10\x00\x00", "3 bytes is too short for a safetensors header", id="short"),
    pytest.param(
        GOOD[:20],
        f"header claims {HEADER_LENGTH} bytes but only 12 follow",
        id="truncated-in-header",
    ),
    pytest.param(
        GOOD[:-1],
        'tensor "anomaly_label" data_offsets [96, 108] run past the '
        "107-byte buffer (truncated body?)",
        id="truncated-in-data",
    ),
    pytest.param(
        _raw(b"{}", length=(1 << 20) + 1),
        "header of 1048577 bytes exceeds the limit of 1048576",
        id="huge-header",
    ),
    pytest.param(_raw(b"\xff\xfe{}"), "header is not UTF-8 (byte 0)", id="not-utf8"),
    pytest.param(
        _raw(b"{not json}"),
        "header is not valid JSON: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)",
        id="not-json",
    ),
    pytest.param(_raw([1, 2]), "header must be a JSON object", id="header-a-list"),
    pytest.param(
        _raw(b'{"__metadata__": {"protocol": "1.0"}, "inputs": {}, "inputs": {}}'),
        'duplicate key "inputs" in header',
        id="duplicate-key",
    ),
    pytest.param(
        _raw({"__metadata__": {"protocol": "1.0", "epochs": 2}}),
        "__metadata__ must map strings to strings",
        id="metadata-not-strings",
    ),
    pytest.param(
        _raw({"__metadata__": {"protocol": "1.0"}, "inputs": {"dtype": "F32"}}),
        'tensor "inputs" must have exactly dtype, shape and data_offsets',
        id="entry-missing-keys",
    ),
    pytest.param(
        _file({**_good(), "inputs": ("Q4", [3, D], F32_ROWS)}),
        'tensor "inputs" has unknown dtype "Q4"',
        id="unknown-dtype",
    ),
    pytest.param(
        _file({**_good(), "inputs": ("F32", [-3, D], F32_ROWS)}),
        'tensor "inputs" has an invalid shape [-3, 8]',
        id="negative-dim",
    ),
    pytest.param(
        _file({**_good(), "inputs": ("F32", [0, 2**31, 2**31], b"")}),
        'tensor "inputs" has an invalid shape [0, 2147483648, 2147483648]',
        id="shape-too-big",
    ),
    pytest.param(
        _raw(
            {
                "__metadata__": {"protocol": "1.0"},
                "inputs": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]},
            }
        ),
        'tensor "inputs" has invalid data_offsets [4, 0]',
        id="offsets-reversed",
    ),
    pytest.param(
        _file({**_good(), "inputs": ("F32", [3, D + 1], F32_ROWS)}),
        'tensor "inputs" is F32 [3, 9] (108 bytes) but its data_offsets span 96 bytes',
        id="shape-and-bytes-disagree",
    ),
    pytest.param(
        _raw(
            {
                "__metadata__": {"protocol": "1.0"},
                "inputs": {"dtype": "F32", "shape": [3, D], "data_offsets": [0, 96]},
                "anomaly_label": {"dtype": "F32", "shape": [3], "data_offsets": [84, 96]},
            },
            F32_ROWS,
        ),
        'tensor "anomaly_label" starts at byte 84, expected 96; tensors must tile the '
        "buffer without gaps or overlaps",
        id="overlap",
    ),
    pytest.param(
        _raw(
            {
                "__metadata__": {"protocol": "1.0"},
                "inputs": {"dtype": "F32", "shape": [3, D], "data_offsets": [0, 96]},
                "anomaly_label": {"dtype": "F32", "shape": [3], "data_offsets": [100, 112]},
            },
            F32_ROWS + b"\0" * 4 + F32_LABELS,
        ),
        'tensor "anomaly_label" starts at byte 100, expected 96; tensors must tile the '
        "buffer without gaps or overlaps",
        id="gap",
    ),
    pytest.param(GOOD + b"\0\0", "2 trailing bytes after the last tensor", id="trailing-bytes"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_bodies_are_refused_in_clear_words(data: bytes, message: str) -> None:
    err = _refused(data)
    assert err.message == f"Malformed batch: {message}"
    assert err.error_type is ErrorType.MALFORMED_BODY
    assert err.sample is None


REFUSED = [
    pytest.param(
        _file(_good(), {"protocol": "2.0"}),
        "Unsupported protocol version 2.0; this server speaks 1.x",
        ErrorType.UNSUPPORTED_PROTOCOL,
        None,
        id="protocol-2",
    ),
    pytest.param(
        _file(_good(), {"protocol": "one"}),
        "Unsupported protocol version one; this server speaks 1.x",
        ErrorType.UNSUPPORTED_PROTOCOL,
        None,
        id="protocol-garbage",
    ),
    pytest.param(
        _raw({"__metadata__": {"protocol": "2.0"}, "inputs": "a v2 layout"}),
        "Unsupported protocol version 2.0; this server speaks 1.x",
        ErrorType.UNSUPPORTED_PROTOCOL,
        None,
        id="protocol-2-checked-before-tensors",
    ),
    pytest.param(
        safetensors.numpy.save({"inputs": X2, "anomaly_label": np.zeros(3, np.float32)}),
        'Batch metadata has no "protocol" version; this server speaks 1.x',
        ErrorType.UNSUPPORTED_PROTOCOL,
        None,
        id="no-protocol",
    ),
    pytest.param(
        _file({"anomaly_label": _good()["anomaly_label"]}),
        'Batch has no "inputs" tensor',
        ErrorType.INVALID_REQUEST,
        None,
        id="no-inputs",
    ),
    pytest.param(
        _file({"inputs": _good()["inputs"]}),
        'Batch has no "anomaly_label" tensor',
        ErrorType.INVALID_REQUEST,
        None,
        id="no-labels",
    ),
    pytest.param(
        _file(_good(extra=("F32", [1], b"\0" * 4))),
        'Unknown tensor "extra" in batch; expected inputs, anomaly_label, '
        "dendrite_target or coherence_target",
        ErrorType.INVALID_REQUEST,
        None,
        id="unknown-tensor",
    ),
    pytest.param(
        _file({**_good(), "inputs": ("I64", [3, D], X2.astype("<i8").tobytes())}),
        "inputs must be F32, F16 or BF16, got I64",
        ErrorType.INVALID_REQUEST,
        None,
        id="int64-inputs",
    ),
    pytest.param(
        _file({**_good(), "inputs": ("F64", [3, D], X2.astype("<f8").tobytes())}),
        "inputs must be F32, F16 or BF16, got F64",
        ErrorType.INVALID_REQUEST,
        None,
        id="f64-inputs",
    ),
    pytest.param(
        _file({**_good(), "anomaly_label": ("I64", [3], b"\0" * 24)}),
        "anomaly_label must be F32 or U8, got I64",
        ErrorType.INVALID_REQUEST,
        None,
        id="int64-labels",
    ),
    pytest.param(
        _file(_good(dendrite_target=("F16", [3, 16], b"\0" * 96))),
        "dendrite_target must be F32, got F16",
        ErrorType.INVALID_REQUEST,
        None,
        id="f16-target",
    ),
    pytest.param(
        _file({**_good(), "inputs": ("F32", [3, 3], F32_ROWS[:36])}),
        "Input dimension mismatch: expected 8D, got 3D",
        ErrorType.DIMENSION_MISMATCH,
        0,
        id="wrong-width",
    ),
    pytest.param(
        _file({**_good(), "inputs": ("F32", [24], F32_ROWS)}),
        "inputs must be (B, 8) or (B, T, 8), got shape [24]",
        ErrorType.DIMENSION_MISMATCH,
        None,
        id="flat-inputs",
    ),
    pytest.param(
        _file({"inputs": ("F32", [0, D], b""), "anomaly_label": ("F32", [0], b"")}),
        "Empty batch: send at least one sample",
        ErrorType.EMPTY_BATCH,
        None,
        id="empty-batch",
    ),
    pytest.param(
        _file({**_good(), "anomaly_label": ("F32", [2], F32_LABELS[:8])}),
        "Expected 3 anomaly labels, got 2",
        ErrorType.INVALID_LABEL,
        None,
        id="too-few-labels",
    ),
    pytest.param(
        _file({**_good(), "anomaly_label": ("F32", [3, 1], F32_LABELS)}),
        "anomaly_label must have shape [B], got [3, 1]",
        ErrorType.INVALID_LABEL,
        None,
        id="labels-2d",
    ),
    pytest.param(
        _file({**_good(), "anomaly_label": ("U8", [3], bytes([0, 2, 1]))}),
        "Invalid anomaly_label: sample 1 has 2, expected 0 or 1",
        ErrorType.INVALID_LABEL,
        1,
        id="u8-label-2",
    ),
    pytest.param(
        encode_batch(X2, [0, 1, 0.5]),
        "Invalid anomaly_label: sample 2 has 0.5, expected 0 or 1",
        ErrorType.INVALID_LABEL,
        2,
        id="label-half",
    ),
    pytest.param(
        _file(_good(), {"epochs": "1.5"}),
        'epochs must be an integer, got "1.5"',
        ErrorType.INVALID_REQUEST,
        None,
        id="epochs-float",
    ),
    pytest.param(
        _file(_good(), {"epochs": "many"}),
        'epochs must be an integer, got "many"',
        ErrorType.INVALID_REQUEST,
        None,
        id="epochs-word",
    ),
    pytest.param(
        _file(_good(), {"epochs": "0"}),
        "epochs must be between 1 and 1000, got 0",
        ErrorType.INVALID_REQUEST,
        None,
        id="epochs-zero",
    ),
    pytest.param(
        encode_batch(X2, LABELS, epochs=1001),
        "epochs must be between 1 and 1000, got 1001",
        ErrorType.INVALID_REQUEST,
        None,
        id="epochs-too-many",
    ),
    pytest.param(
        _file(_good(), {"seq": "-1"}),
        "seq must be a non-negative integer, got -1",
        ErrorType.INVALID_REQUEST,
        None,
        id="seq-negative",
    ),
    pytest.param(
        _file(_good(), {"seq": "x"}),
        'seq must be an integer, got "x"',
        ErrorType.INVALID_REQUEST,
        None,
        id="seq-word",
    ),
    pytest.param(
        encode_batch(X2, LABELS, dendrite_target=np.zeros((3, 15))),
        "dendrite_target must have shape [3, 16], got [3, 15]",
        ErrorType.INVALID_REQUEST,
        None,
        id="dendrite-target-width",
    ),
    pytest.param(
        _file(_good(coherence_target=("F32", [64], b"\0" * 256))),
        "coherence_target must have shape [3, 64], got [64]",
        ErrorType.INVALID_REQUEST,
        None,
        id="coherence-target-1d",
    ),
    pytest.param(
        encode_batch(X2, LABELS, coherence_target=np.full((3, 64), [[0], [0], [np.inf]])),
        "Non-finite coherence_target: sample 2 contains NaN or Inf",
        ErrorType.NON_FINITE_INPUT,
        2,
        id="coherence-target-inf",
    ),
]


@pytest.mark.parametrize(("data", "message", "error_type", "sample"), REFUSED)
def test_well_formed_but_wrong_batches_are_refused(
    data: bytes, message: str, error_type: ErrorType, sample: int | None
) -> None:
    err = _refused(data)
    assert err.message == message
    assert err.error_type is error_type
    assert err.sample == sample


def test_max_batch_is_enforced_before_reading_the_data() -> None:
    err = _refused(GOOD, max_batch=2)
    assert err.message == "Batch too large: 3 samples, this server takes at most 2"
    assert err.error_type is ErrorType.INVALID_REQUEST
    assert decode_batch(GOOD, input_dim=D, max_batch=3).batch.size == 3


def test_the_model_width_comes_from_the_caller() -> None:
    err = _refused(encode_batch(np.zeros((2, 1600)), [0, 1]), input_dim=32)
    assert err.message == "Input dimension mismatch: expected 32D, got 1600D"


# ---------------------------------------------------------------- fuzz

FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SEEDS = [
    GOOD,
    encode_batch(X3, LABELS, dtype="f16", epochs=2, run_id="r", seq=3, batch_id="b"),
    encode_batch(
        X2,
        LABELS,
        dtype="bf16",
        dendrite_target=np.zeros((3, 16)),
        coherence_target=np.zeros((3, 64)),
    ),
]


def _decodes_or_refuses(data: bytes) -> None:
    try:
        decoded = decode_batch(data, input_dim=D, max_batch=64)
    except BatchError as exc:
        assert isinstance(exc.error_type, ErrorType)
        assert exc.message
        exc.message.encode("utf-8")  # a response body must be able to carry it
    else:
        assert decoded.batch.inputs.dtype == np.float32
        assert np.isfinite(decoded.batch.inputs).all()


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_batch_errors(data: bytes) -> None:
    _decodes_or_refuses(data)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
)
def test_mutated_and_truncated_encodings_raise_only_batch_errors(
    seed: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    _decodes_or_refuses(bytes(data[: len(data) - cut % len(data)]))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_ENTRY = (
    st.fixed_dictionaries(
        {
            "dtype": st.sampled_from(["F32", "F16", "BF16", "U8", "I64", "F64", "BOOL", "X"])
            | _JSON,
            "shape": st.lists(st.integers(-1, 40), max_size=4) | _JSON,
            "data_offsets": st.lists(st.integers(-1, 400), min_size=2, max_size=2) | _JSON,
        }
    )
    | _JSON
)
_NAMES = st.sampled_from(["inputs", "anomaly_label", "dendrite_target", "coherence_target"])
_DTYPES = st.sampled_from(["F32", "F16", "BF16", "U8", "I64", "F64"])
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "U8": 1, "I64": 8, "F64": 8}
_METADATA = st.fixed_dictionaries(
    {"protocol": st.just("1.0")},
    optional={
        key: st.sampled_from(["1", "0", "-1", "3", "1e3", "", "2000"]) | st.text(max_size=4)
        for key in ("epochs", "seq", "run_id", "batch_id")
    },
)


@settings(FUZZ, max_examples=200)  # generating nested JSON is the slow part
@given(
    st.dictionaries(_NAMES | st.text(max_size=6), _ENTRY, max_size=5),
    _METADATA | st.dictionaries(st.sampled_from(["protocol", "epochs"]), _JSON),
    st.binary(max_size=400),
)
def test_hostile_headers_raise_only_batch_errors(
    tensors: dict[str, Any], metadata: dict[str, Any], buffer: bytes
) -> None:
    _decodes_or_refuses(_raw({"__metadata__": metadata, **tensors}, buffer))


def _content(dtype: str, count: int, rng: Any, benign: bool) -> bytes:
    """Random bytes, or zeros and ones (labels that pass, inputs that are finite)."""
    if not benign:
        return bytes(rng.randbytes(count * _ITEMSIZE[dtype]))
    values = np.random.default_rng(rng.getrandbits(32)).integers(0, 2, count).astype(np.float32)
    if dtype == "BF16":
        return (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    wire = {"F32": "<f4", "F16": "<f2", "U8": "u1", "I64": "<i8", "F64": "<f8"}[dtype]
    return values.astype(wire).tobytes()


_SHAPES = st.lists(st.sampled_from([0, 1, 2, 3, 8, 16, 64]), max_size=4).filter(
    lambda shape: math.prod(shape) <= 4096
)
_TENSOR = st.tuples(_DTYPES, _SHAPES)
_USUAL = {
    "inputs": st.tuples(
        st.sampled_from(["F32", "F16", "BF16", "I64"]),
        st.sampled_from([[3, D], [3, 2, D], [3, 0, D], [2, D]]) | _SHAPES,
    ),
    "anomaly_label": st.tuples(
        st.sampled_from(["F32", "U8", "F64"]), st.sampled_from([[3], [2], [3, 1]]) | _SHAPES
    ),
}
_TARGETS = {
    "dendrite_target": st.tuples(
        st.sampled_from(["F32", "F16"]), st.sampled_from([[3, 16], [2, 16], [3, 15]]) | _SHAPES
    ),
    "coherence_target": st.tuples(
        st.sampled_from(["F32", "BF16"]), st.sampled_from([[3, 64], [3, 16]]) | _SHAPES
    ),
}


@FUZZ
@given(
    st.fixed_dictionaries(_USUAL, optional=_TARGETS)
    | st.dictionaries(_NAMES | st.text(max_size=4), _TENSOR, max_size=4),
    st.fixed_dictionaries(
        {"protocol": st.sampled_from(["1.0", "1.3"])},
        optional={"epochs": st.sampled_from(["1", "2", "0", "x"]), "seq": st.just("4")},
    ),
    st.randoms(use_true_random=False),
    st.booleans(),
)
def test_well_laid_out_files_with_random_content_raise_only_batch_errors(
    tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str], rng: Any, benign: bool
) -> None:
    """Valid containers with any names, dtypes, shapes and bytes: deep into validation."""
    _decodes_or_refuses(
        _file(
            {
                name: (dtype, shape, _content(dtype, math.prod(shape), rng, benign))
                for name, (dtype, shape) in tensors.items()
            },
            metadata,
        )
    )
