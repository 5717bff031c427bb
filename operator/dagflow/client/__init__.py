"""The command line (`dagflow`, `kubectl dagflow`): `cli` its commands, `flowclient` its calls to the
API server (also used by the SDK and the dashboard), `flowview` what its tables and trees show."""
