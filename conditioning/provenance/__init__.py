"""C2PA provenance for generated outputs, signed offline under the registry's own certificate chain.

Every output the generator hands back is signed before it leaves the registry. The manifest says:

* ``c2pa.actions``: one ``c2pa.created`` action with digitalSourceType
  ``trainedAlgorithmicMedia`` (IPTC), and the generator id as its ``softwareAgent``;
* ``org.cameo.consent``: the caller's claim, as JSON: which cameos appear, the digests of their
  consent records, the grant and token ids, the generator id and the request digest.

Thumbnails are off (a thumbnail of a likeness is a copy of the likeness; it also costs time).

Trust
-----
:class:`ProvenanceAuthority` generates a three-level chain in a directory the caller chooses::

    root CA (20 y, path length 1) -> intermediate CA (10 y, path length 0) -> signer (5 y)

The signer certificate has ``CA:FALSE``, key usage digitalSignature and the extended key usages
emailProtection and documentSigning (RFC 9336), which is what C2PA validators ask for; they
refuse self-signed or EKU-less signers. Manifests carry the chain *without* the root; a verifier
says "Trusted" only when our root is configured as its trust anchor (``trust.trust_anchors`` in
the c2pa settings, see :func:`verify_output`). Other readers with default settings report
"Valid" (signature and hashes good, signer unknown to them).

Lifetimes, on purpose. There is no timestamp authority offline, so a validator checks the signer
certificate against *its own clock*: **a manifest turns invalid the day the signer certificate
expires**, however honest the file. The signer lives five years: long enough that outputs stay
verifiable for the life of a typical share, short enough that a leaked signer key does not sign
forever (there is no revocation checking offline either). Call
:meth:`ProvenanceAuthority.renew_signer` well before :attr:`ProvenanceAuthority.signer_not_after`;
it issues a new signer under the same intermediate, so new outputs stay trusted, but files
signed by the old signer still expire with it. Deployments that want manifests to outlive the
signer must configure a timestamp authority (``ta_url``), which this offline build does not.

Files in the authority directory (private keys are created 0600, the directory 0700)::

    root.pem  root.key          only needed to issue a new intermediate: keep it offline if you can
    intermediate.pem  intermediate.key
    signer.pem                  signer private key + certificate, one file so renewal is atomic
    chain.pem                   signer + intermediate certificates, as embedded in manifests

Where the manifest goes
-----------------------
Every format the c2pa SDK can write (JPEG, PNG, WebP, GIF, TIFF, AVIF/HEIC, WAV, FLAC, MP3, MP4,
MOV, M4A, AVI, PDF, ...) gets the manifest *embedded*. ``sign_output(..., sidecar=True)`` leaves
the asset's bytes untouched and writes the manifest store to ``<file>.c2pa`` instead (the SDK's
no-embed mode; any C2PA reader validates it against the asset). Files the SDK cannot hash at all
(e.g. ``.npy`` or ``.ogg``) get a *detached* statement ``<file>.provenance.json``: the same
assertions plus the file's SHA-256 and size, signed with the same signer key over DSSE
pre-authentication encoding, the chain attached; :func:`verify_output` checks it against the same
trust anchor. Re-encoding a file (e.g. re-saving a JPEG with PIL) drops an embedded manifest.
"""

from ._authority import Algorithm, CLOCK_SKEW, INTERMEDIATE_LIFETIME, ProvenanceAuthority, ROOT_LIFETIME, SIGNER_LIFETIME
from ._report import CONSENT_ASSERTION, ProvenanceReport, SOFT_BINDING_ASSERTION, TRAINED_ALGORITHMIC_MEDIA, ValidationMessage
from ._detached import DETACHED_PAYLOAD_TYPE, DETACHED_SUFFIX, detached_path
from ._c2pa import SIDECAR_SUFFIX, inspect_output, sidecar_path, sign_output, verify_output
from ._soft_binding import draw_identifier, mark_output, read_picture, record_output, resolve_watermark

__all__ = ["draw_identifier", "mark_output", "read_picture", "record_output", "resolve_watermark", "Algorithm", "CLOCK_SKEW", "CONSENT_ASSERTION", "DETACHED_PAYLOAD_TYPE", "DETACHED_SUFFIX", "INTERMEDIATE_LIFETIME", "ProvenanceAuthority", "ProvenanceReport", "ROOT_LIFETIME", "SIDECAR_SUFFIX", "SIGNER_LIFETIME", "SOFT_BINDING_ASSERTION", "TRAINED_ALGORITHMIC_MEDIA", "ValidationMessage", "detached_path", "inspect_output", "sidecar_path", "sign_output", "verify_output"]
