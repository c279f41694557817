"""Outgoing e-mail through a pluggable backend (`MAIL_BACKEND`).

- `log`: one log line per message, recipient masked, no body (local, test default).
- `file`: one `.eml` file per message under `MAIL_FILE_DIR` (inspect what would be sent).
- `smtp`: a real server (`SMTP_HOST`, `SMTP_PORT`, `SMTP_USERNAME`, `SMTP_PASSWORD`,
  `SMTP_STARTTLS`, `SMTP_TIMEOUT`).

Sending is called from Celery tasks, never from a request: a slow or failing server
costs a retry, not a user's answer. SMTP connection errors are `OSError`s, which the base
task retries.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

from myapp.core.config import current_settings
from myapp.core.db import new_id
from myapp.core.logging import get_logger, mask_email

log = get_logger(__name__)


def send_mail(*, to: str, subject: str, body: str) -> None:
    """Send one plain-text message with the configured backend."""
    settings = current_settings()
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    if settings.mail_backend == "file":
        directory = Path(settings.mail_file_dir)
        directory.mkdir(parents=True, exist_ok=True)
        # Written aside, then renamed: whoever watches the directory never reads half a file.
        name = new_id()
        partial = directory / f".{name}.partial"
        partial.write_bytes(message.as_bytes())
        partial.replace(directory / f"{name}.eml")
    elif settings.mail_backend == "smtp":
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username and settings.smtp_password:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(message)
    log.info("mail.sent", backend=settings.mail_backend, to=mask_email(to), subject=subject)
