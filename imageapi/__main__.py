from imageapi.cli.app import main

main()
