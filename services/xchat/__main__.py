from xchat.cli import main

main()
