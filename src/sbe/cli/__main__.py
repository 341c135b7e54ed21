from sbe.cli import main

main()
