"""Settings of the worker's web server and its callers' credentials (``OUTAGE_SMS_`` env).

Apart from ``topology.settings`` because only the web endpoints need them. Secrets come
from the environment only; without a shared secret or Basic credentials the web server
refuses to start, unless ``OUTAGE_SMS_WEB_DEMO=true`` says this is a demo.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.ingress import Credentials

__all__ = ["WebSettings"]


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OUTAGE_SMS_", extra="ignore")

    web_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret callers send in the web_secret_header header (a Genesys "
        "'User Defined' credential). Either this or Basic credentials is required.",
    )
    web_secret_header: str = Field(
        default="X-Outage-Sms-Key", description="Header that carries the shared secret."
    )
    web_basic_user: str | None = Field(
        default=None, description="HTTP Basic user (a Genesys 'Basic Auth' credential)."
    )
    web_basic_password: SecretStr | None = Field(default=None, description="HTTP Basic password.")
    twilio_auth_token: SecretStr | None = Field(
        default=None,
        description="Validates X-Twilio-Signature; without it the Twilio endpoints answer 403.",
    )
    web_public_url: str | None = Field(
        default=None,
        description="The scheme://host[:port] Twilio calls (behind a proxy or load balancer "
        "it differs from what the worker sees); Twilio signs the full URL.",
    )
    web_demo: bool = Field(
        default=False,
        description="Demo only: serve without credentials and accept unsigned Twilio calls.",
    )
    web_host: str | None = Field(
        default=None,
        description="Host name other workers reach this one by (forwarded status look-ups); "
        "default: Faust's (the machine's host name).",
    )
    web_bind: str = Field(default="0.0.0.0", description="Interface to listen on.")  # noqa: S104
    web_max_body_bytes: int = Field(
        default=16 * 1024, ge=1024, le=1024 * 1024, description="Larger bodies get 413."
    )
    web_forward_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Time a worker waits for the one owning the number."
    )
    web_receipt_link_wait_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long a receipt waits for the dispatcher's 'sent' record that links "
        "its provider message id to our command (the two can race).",
    )
    web_receipt_links_kept: int = Field(
        default=50, ge=1, description="Provider message ids remembered per number."
    )

    def credentials(self) -> Credentials:
        return Credentials(
            secret=self.web_secret.get_secret_value() if self.web_secret else None,
            secret_header=self.web_secret_header,
            basic_user=self.web_basic_user,
            basic_password=(
                self.web_basic_password.get_secret_value() if self.web_basic_password else None
            ),
        )

    def twilio_token(self) -> str | None:
        return self.twilio_auth_token.get_secret_value() if self.twilio_auth_token else None
