from klaviyo_sync.cli import main

main()
