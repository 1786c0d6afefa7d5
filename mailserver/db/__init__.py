"""The LMDB index shared by the store and the user directory (one environment per data
directory). Implementations import it; protocols never do."""

from mailserver.db.env import Database, Snapshot, Txn

__all__ = ["Database", "Snapshot", "Txn"]
