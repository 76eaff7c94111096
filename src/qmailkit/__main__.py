from qmailkit.cli import main

raise SystemExit(main())
