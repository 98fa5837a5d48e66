"""What the sayiir-grpc server and its Python client share.

One home for each shape: the snapshot model (`model`, `ids`), the durable blob
codecs (`codec`, `engine_order`), every input check (`checks`), every
conversion between the model and the protobuf messages (`convert`), the error variants with
their gRPC statuses (`errors`), and the generated protobuf and gRPC modules
(`proto`). The server and the client both import from here; neither imports
the other.
"""
