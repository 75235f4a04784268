from larrylab.cli import main

main()
