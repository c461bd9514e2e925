from corteza.cli import main

main()
