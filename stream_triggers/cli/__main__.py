from stream_triggers.cli.main import main

main()
