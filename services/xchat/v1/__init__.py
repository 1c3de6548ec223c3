"""Generated protobuf and gRPC modules (do not edit; see xchat._protogen)."""
