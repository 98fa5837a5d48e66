from sayiir_grpc.cli import main

raise SystemExit(main())
