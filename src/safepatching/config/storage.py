"""The `storage:` section: the DVC remote the rounds' data is shared through (default: none, one machine)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from .settings import Strict


class StorageCfg(Strict):
    """A DVC remote for the lineage's data (batches, patches, scores, models). `url: null` (the default) is one
    machine with the local cache only. Credentials never live here: S3 keys come from the environment
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE) or DVC's git-ignored
    `dvc remote modify --local <remote> access_key_id ...` config."""

    remote: str = Field("storage", description="the DVC remote's name (written to .dvc/config.local, the default "
                                               "remote of the workspace)")
    url: str | None = Field(None, description="null: no remote | a local or mounted folder (relative: from the "
                                              "project root) | s3://bucket/path")
    endpoint_url: str | None = Field(None, description="S3-compatible store (MinIO, SeaweedFS, rclone): its "
                                                       "http(s) endpoint; null: AWS S3")

    @field_validator("remote")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", v):
            raise ValueError(f"{v!r}: a remote name is letters, digits, '-', '_' or '.'")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise ValueError("empty url (null: no remote)")
        scheme = re.match(r"([a-z][a-z0-9+.-]*)://", v)
        if scheme and scheme.group(1) not in ("s3", "file"):
            raise ValueError(f"{v!r}: only a folder or s3://bucket/path is supported (S3-compatible stores: "
                             "endpoint_url)")
        if re.match(r"[A-Za-z0-9]+://[^@/]*@", v):
            raise ValueError("credentials never go in the url: use AWS_* environment variables or "
                             "`dvc remote modify --local`")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https?://[^@\s]+", v):
            raise ValueError(f"{v!r}: expected http(s)://host[:port] (no credentials)")
        return v

    @property
    def enabled(self) -> bool:
        return self.url is not None
