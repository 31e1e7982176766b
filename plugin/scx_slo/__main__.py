from scx_slo.cli import main

raise SystemExit(main())
