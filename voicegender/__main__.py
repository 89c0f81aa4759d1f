from voicegender.cli import main

raise SystemExit(main())
