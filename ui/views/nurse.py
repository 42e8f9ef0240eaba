"""Nurse flow: the inbox of incoming studies with their findings, reconstruct, progress of jobs."""

from __future__ import annotations

from flask import Blueprint, render_template

from ui import auth

bp = Blueprint("nurse", __name__)


@bp.get("/inbox")
@auth.require_area("inbox")
def inbox() -> str:
    """Studies (from ``/api/studies``) with series, findings in plain words, reconstruct and progress."""
    return render_template("inbox.html")
