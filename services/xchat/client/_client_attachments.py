"""``Client``'s methods for attachments (docs/attachments.md).

A part of the ``Client`` facade (``client``), which inherits it: ``_attachments``
(made in ``Client.__init__``) encrypts, uploads, downloads and verifies the
file; the message that references it goes through ``Client.send``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from xchat.client._attachments import CONTENT_TYPE as ATTACHMENT_TYPE
from xchat.client._attachments import Attachment, Attachments, Progress, pointer
from xchat.client.errors import AttachmentError
from xchat.client.messages import Message, SendReceipt


class AttachmentMethods:
    """``Client``'s methods for attachments (its parts declared here, made in ``Client.__init__``)."""

    _attachments: Attachments

    if TYPE_CHECKING:  # the facade's own (``Client``)

        async def send(
            self, account: str, body: bytes | str, *, content_type: str = "text/plain"
        ) -> list[SendReceipt]: ...

    # -- attachments (``_attachments``, docs/attachments.md) ----------------

    async def send_attachment(
        self,
        account: str,
        source: str | Path | BinaryIO,
        *,
        content_type: str = "application/octet-stream",
        name: str | None = None,
        progress: Progress | None = None,
    ) -> list[SendReceipt]:
        """Encrypts a file (a path, or a seekable binary file) under a fresh key, uploads it, then sends
        ``account`` a message carrying its id, key, size and SHA-256; one receipt per device, as ``send``.

        Up to the server's limit (128 MiB by default); memory stays bounded whatever the size.
        Outages are resumed from the last stored chunk in any region; if this still fails
        (``ServiceUnavailable`` after two minutes, or the client closed), calling it again with
        the same unchanged path resumes the upload. ``progress(done, total)``: bytes stored so far.
        Refusals are ``RequestRejected`` (INVALID_ARGUMENT over the size limit,
        RESOURCE_EXHAUSTED over the account's quota). The recipient reads it with
        ``attachment(message)`` and ``download_attachment``.
        """
        attachment, pending = await self._attachments.upload(source, content_type=content_type, name=name, progress=progress)
        receipts = await self.send(account, attachment.body(), content_type=ATTACHMENT_TYPE)
        self._attachments.forget_pending(pending)
        return receipts

    def attachment(self, message: Message) -> Attachment | None:
        """The attachment ``message`` references, or None for any other message."""
        return pointer(message)

    async def download_attachment(
        self, message: Message | Attachment, dest: str | Path, *, progress: Progress | None = None
    ) -> Path:
        """Downloads, decrypts and verifies an attachment into ``dest``; returns ``dest``.

        Each 64 KiB chunk is authenticated as it arrives and the file's size and SHA-256 are
        checked at the end: ``AttachmentError`` (``problem`` tampered, truncated, size, digest)
        and nothing at ``dest`` if any check fails. Until it returns the bytes live in
        ``dest`` + ``.xchat-part``; an interrupted download (outage, client closed) resumes
        from there when called again. ``progress(done, total)``: ciphertext bytes received.
        """
        attachment = message if isinstance(message, Attachment) else pointer(message)
        if attachment is None:
            raise AttachmentError("not_attachment", f"message of type {message.content_type!r} carries no attachment")
        return await self._attachments.download(attachment, Path(dest), progress)
