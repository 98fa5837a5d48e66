from sayiir_client import GrpcBackend, WorkflowSnapshot


async def test_save_and_load_round_trip(backend: GrpcBackend, instance_id: str) -> None:
    snapshot = WorkflowSnapshot.new(instance_id, "hash-1")
    await backend.save_snapshot(snapshot)
    loaded = await backend.load_snapshot(instance_id)
    assert loaded == snapshot
