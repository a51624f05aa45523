"""Video data: the manifest, labels, ingest, ffmpeg decode into the clip cache, clips, the synthetic demo data."""
