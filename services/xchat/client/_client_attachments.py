"""``Client``'s methods for attachments (docs/attachments.md).

A part of the ``Client`` facade (``client``), which inherits it: ``_attachments``
(made in ``Client.__init__``) encrypts, uploads, downloads, verifies and deletes
the file; the message that references it goes through ``Client.send`` (or
``Client.send_group``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from xchat.client._attachments import CONTENT_TYPE as ATTACHMENT_TYPE
from xchat.client._attachments import Attachment, Attachments, Progress, pointer
from xchat.client.errors import AttachmentError
from xchat.client.groups import Group, GroupError
from xchat.client.messages import Failed, Message, SendReceipt


class AttachmentMethods:
    """``Client``'s methods for attachments (its parts declared here, made in ``Client.__init__``)."""

    _attachments: Attachments

    if TYPE_CHECKING:  # the facade's own (``Client``)

        async def send(
            self, account: str, body: bytes | str, *, content_type: str = "text/plain"
        ) -> list[SendReceipt]: ...

        async def send_group(
            self, group_id: str, body: bytes | str, *, content_type: str = "text/plain"
        ) -> list[SendReceipt | Failed]: ...

        def group(self, group_id: str) -> Group | None: ...

    # -- attachments (``_attachments``, docs/attachments.md) ----------------

    async def send_attachment(
        self,
        account: str,
        source: str | Path | BinaryIO | Attachment,
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
        ``attachment(message)`` and ``download_attachment``. ``source`` may also be an
        ``Attachment`` from ``upload_attachment``: its reference is sent, nothing is uploaded.
        """
        attachment, pending = await self._upload(source, content_type=content_type, name=name, progress=progress)
        receipts = await self.send(account, attachment.body(), content_type=ATTACHMENT_TYPE)
        self._attachments.forget_pending(pending)
        return receipts

    async def upload_attachment(
        self,
        source: str | Path | BinaryIO,
        *,
        content_type: str = "application/octet-stream",
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Attachment:
        """Encrypts and uploads a file as ``send_attachment`` does, without sending it: the returned
        ``Attachment`` (it holds the key: keep it like a message) can be sent to any number of
        accounts and groups (``send_attachment(account, attachment)``, ``send_group_attachment``)
        and deleted by this account (``delete_attachment``)."""
        attachment, pending = await self._upload(source, content_type=content_type, name=name, progress=progress)
        self._attachments.forget_pending(pending)
        return attachment

    async def _upload(
        self, source: str | Path | BinaryIO | Attachment, *, content_type: str, name: str | None, progress: Progress | None
    ) -> tuple[Attachment, str | None]:
        if isinstance(source, Attachment):
            return source, None  # uploaded already: sent as is
        return await self._attachments.upload(source, content_type=content_type, name=name, progress=progress)

    async def send_group_attachment(
        self,
        group_id: str,
        source: str | Path | BinaryIO | Attachment,
        *,
        content_type: str = "application/octet-stream",
        name: str | None = None,
        progress: Progress | None = None,
    ) -> list[SendReceipt | Failed]:
        """``send_attachment`` to a group: the file is encrypted and uploaded once, and its reference
        (id, key, size, SHA-256) goes as one group message (``send_group``) to every member device,
        which reads it with ``attachment(message)`` (``Message.group_id`` set) and ``download_attachment``.

        ``GroupError`` before anything is uploaded when this account is not (or no longer) in the group.
        """
        group = self.group(group_id)
        if group is None or not group.active:
            raise GroupError(f"this account is not in group {group_id}")
        attachment, pending = await self._upload(source, content_type=content_type, name=name, progress=progress)
        outcomes = await self.send_group(group_id, attachment.body(), content_type=ATTACHMENT_TYPE)
        self._attachments.forget_pending(pending)
        return outcomes

    async def delete_attachment(self, attachment: Message | Attachment | str) -> int:
        """Deletes an attachment this account uploaded (an ``Attachment``, the message that carries it,
        or its ``attachment_id``) from the servers before its expiry; returns the ciphertext bytes dropped.

        Downloads fail from then on (a copy someone already downloaded stays theirs) and the
        account's quota is freed at once. ``AttachmentError`` with ``problem`` "not_owner" when
        another account uploaded it (the servers refuse, PERMISSION_DENIED, and it stays),
        "gone" when it is unknown or expired. Deleting it again returns 0.
        """
        if isinstance(attachment, Message):
            found = pointer(attachment)
            if found is None:
                raise AttachmentError("not_attachment", f"message of type {attachment.content_type!r} carries no attachment")
            attachment = found
        return await self._attachments.delete(attachment if isinstance(attachment, str) else attachment.attachment_id)

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
