from visionpipe.cli import main

main()
