from sayiir_grpc.cli import main

# Guarded: the processes of `serve --workers N` are spawned and import this module again.
if __name__ == "__main__":
    raise SystemExit(main())
