from hairclip.cli import main

raise SystemExit(main())
