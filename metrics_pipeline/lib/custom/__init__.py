"""Custom measures and events pushed by applications (SPEC §2.5, §12): the plain-Python core of the push
API. `config` (limits, `config/api.yaml`), `validate` (a decoded JSON body -> Measure/Event items, or
the whole batch refused with every invalid item listed), `landing` (the durable landing writer the
API acknowledges through), `files` (landing keys, the line format, the reader the loaders use).
No FastAPI, no Dagster."""
