from zuora_sync.cli import main

main()
