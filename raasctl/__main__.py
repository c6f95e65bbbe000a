from raasctl.cli import main

main()
