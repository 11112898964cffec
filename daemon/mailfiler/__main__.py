from mailfiler.cli.main import main

main()
