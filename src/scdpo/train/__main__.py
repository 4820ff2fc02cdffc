from scdpo.train import main

main()
