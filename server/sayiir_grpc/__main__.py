from sayiir_grpc.cli import main

# Guarded: spawned processes import this module again (`serve --workers N`, the blob worker of
# sayiir_grpc.offload).
if __name__ == "__main__":
    raise SystemExit(main())
