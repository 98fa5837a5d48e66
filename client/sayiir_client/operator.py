"""`OperatorClient`: the WorkflowOperator service from Python (its home is
`sayiir_common.operator_client`, shared with the `sayiir-grpc workflows` command line)."""

from sayiir_common.operator_client import OperatorClient, Targets, connect_operator

__all__ = ["OperatorClient", "Targets", "connect_operator"]
