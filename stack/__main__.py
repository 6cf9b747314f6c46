from stack.cli.main import main

raise SystemExit(main())
