"""HTTP front end: health check now, the REST API and web mail later (a protocol package: it
imports only leaves and gets everything else through callables and interfaces)."""
