"""Faces: the detection backlog (sent to Apollo), stored faces and people."""
