from layerbuild.cli.main import main

main()
