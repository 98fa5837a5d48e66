from sayiir_grpc.cli import main

# Guarded: the blob worker process (sayiir_grpc.offload) imports this module.
if __name__ == "__main__":
    raise SystemExit(main())
