from moltbot.cli import main

raise SystemExit(main())
