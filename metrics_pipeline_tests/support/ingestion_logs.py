"""Ingestion-log records for tests: one good record (`good`), changed field by field, and the same
record started at a given minute of an hour (`at`)."""

from datetime import timedelta


def good(**changes):
    record = {
        "No_Sequence": "2026-01-05-13-05", "Date_Sequence": "2026-01-05", "Heure_Sequence": "13",
        "Minute_Sequence": "05", "Entreprise": "akonovia", "Zone": "1-Raw", "Source": "PowerBI",
        "Objet_Id": 42, "Objet": "Dataset", "Transformation": "REST API", "Etat": "SUCCESS",
        "Debut": "2026-01-05 13:05:00", "Fin": "2026-01-05 13:06:00", "Duree secondes": 60,
        "Description": "Tout roule, pas de stress!", "cpu_time (sec)": 1.5, "memory_used (bytes)": 1048576,
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def at(hour, minute, **changes):
    start = hour + timedelta(minutes=minute)
    return good(
        No_Sequence=start.strftime("%Y-%m-%d-%H-%M"), Date_Sequence=start.strftime("%Y-%m-%d"),
        Heure_Sequence=start.strftime("%H"), Minute_Sequence=start.strftime("%M"),
        Debut=start.strftime("%Y-%m-%d %H:%M:%S"), Fin=(start + timedelta(seconds=60)).strftime("%Y-%m-%d %H:%M:%S"),
        **changes,
    )
