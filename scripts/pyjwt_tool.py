#!/usr/bin/env python3
"""PyJWT as a reference for sealbox's tests and benchmarks: sign, verify, and time verification.

Runs with the test venv (scripts/test builds .venv-test/ from scripts/requirements-test.txt):

  pyjwt_tool.py sign   --private-pem FILE --alg EdDSA|ES256 --kid KID --claims JSON
  pyjwt_tool.py verify --jwks FILE --token TOKEN --audience A --issuer I [--leeway 60]
  pyjwt_tool.py bench  --jwks FILE --token TOKEN --audience A --issuer I --seconds S [--leeway 60]

Each prints one JSON object on stdout and exits 0; on any error it prints one line on stderr
and exits 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any, Callable, NoReturn

import cryptography
import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ALGS = ("EdDSA", "ES256")
REQUIRED_CLAIMS = ["exp", "nbf", "iat", "iss", "aud", "sub", "grant"]


class ToolError(Exception):
    """An error reported as one line on stderr, exit code 1."""


class Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit code 1 (argparse's default is 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(1)


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror}") from None


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def cmd_sign(args: argparse.Namespace) -> dict[str, Any]:
    pem = read_text(args.private_pem).encode()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise ToolError(f"{args.private_pem}: not an unencrypted PEM private key: {e}") from None
    wanted = ed25519.Ed25519PrivateKey if args.alg == "EdDSA" else ec.EllipticCurvePrivateKey
    if not isinstance(key, wanted) or (
        args.alg == "ES256" and not isinstance(key.curve, ec.SECP256R1)
    ):
        raise ToolError(f"{args.private_pem}: not a key for {args.alg}")
    try:
        claims = json.loads(args.claims)
    except json.JSONDecodeError as e:
        raise ToolError(f"--claims is not JSON: {e}") from None
    if not isinstance(claims, dict):
        raise ToolError("--claims must be a JSON object")
    token = jwt.encode(claims, key, algorithm=args.alg, headers={"kid": args.kid, "typ": "JWT"})
    return {"token": token}


def load_key(jwks_path: str, token: str) -> jwt.PyJWK:
    """The JWK of the JWKS file whose kid is the token header's."""
    try:
        jwks = jwt.PyJWKSet.from_json(read_text(jwks_path))
    except (ValueError, jwt.PyJWTError) as e:
        raise ToolError(f"{jwks_path}: not a usable JWK Set: {e}") from None
    header = jwt.get_unverified_header(token)
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise ToolError("the token header has no kid")
    try:
        return jwks[kid]
    except KeyError:
        raise ToolError(f"no key with kid {kid!r} in {jwks_path}") from None


def decoder(key: jwt.PyJWK, args: argparse.Namespace) -> Callable[[str], dict[str, Any]]:
    """Verifies a token against one pre-loaded key, the way a server would."""
    algorithms = [key.algorithm_name]
    options = {"require": REQUIRED_CLAIMS}

    def decode(token: str) -> dict[str, Any]:
        return jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=args.audience,
            issuer=args.issuer,
            leeway=args.leeway,
            options=options,
        )

    return decode


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    key = load_key(args.jwks, args.token)
    return {"claims": decoder(key, args)(args.token)}


def raw_verifier(key: jwt.PyJWK, token: str) -> Callable[[], None]:
    """The public key's own verify of the token's signature, nothing of JWT around it."""
    signing_input, _, sig_b64 = token.rpartition(".")
    data = signing_input.encode("ascii")
    sig = b64url_decode(sig_b64)
    public = key.key
    if isinstance(public, ed25519.Ed25519PublicKey):
        return lambda: public.verify(sig, data)
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        if len(sig) != 2 * size:
            raise ToolError(f"an {key.algorithm_name} signature has {2 * size} bytes, not {len(sig)}")
        der = encode_dss_signature(
            int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
        )
        algorithm = ec.ECDSA(hashes.SHA256())
        return lambda: public.verify(der, data, algorithm)
    raise ToolError(f"bench supports EdDSA and ES256 keys, not {key.algorithm_name}")


def timed(f: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Calls f repeatedly for about `seconds`; returns the count and the time it took."""
    n = 0
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        f()
        n += 1
        now = time.perf_counter()
    return n, now - start


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    if not args.seconds > 0:
        raise ToolError("--seconds must be positive")
    key = load_key(args.jwks, args.token)
    decode = decoder(key, args)
    token = args.token
    decode(token)  # a token that does not verify is an error, not a benchmark
    raw = raw_verifier(key, token)
    raw()
    n, elapsed = timed(lambda: decode(token), args.seconds)
    raw_n, raw_elapsed = timed(raw, args.seconds)
    return {
        "alg": key.algorithm_name,
        "verifies": n,
        "seconds": elapsed,
        "per_second": n / elapsed,
        "raw_verifies": raw_n,
        "raw_seconds": raw_elapsed,
        "raw_per_second": raw_n / raw_elapsed,
        "pyjwt": jwt.__version__,
        "cryptography": cryptography.__version__,
    }


def parser() -> Parser:
    p = Parser(prog="pyjwt_tool.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sign", help="sign claims; prints {\"token\": ...}")
    s.add_argument("--private-pem", required=True, metavar="FILE")
    s.add_argument("--alg", required=True, choices=ALGS)
    s.add_argument("--kid", required=True)
    s.add_argument("--claims", required=True, metavar="JSON")
    s.set_defaults(run=cmd_sign)

    for name, run, help_ in (
        ("verify", cmd_verify, "verify a token against a JWKS; prints {\"claims\": ...}"),
        ("bench", cmd_bench, "time PyJWT's and the raw key's verification of a token"),
    ):
        v = sub.add_parser(name, help=help_)
        v.add_argument("--jwks", required=True, metavar="FILE")
        v.add_argument("--token", required=True)
        v.add_argument("--audience", required=True)
        v.add_argument("--issuer", required=True)
        v.add_argument("--leeway", type=float, default=60.0, metavar="SECONDS")
        if name == "bench":
            v.add_argument("--seconds", type=float, required=True)
        v.set_defaults(run=run)
    return p


def main() -> int:
    args = parser().parse_args()
    try:
        out = args.run(args)
    except Exception as e:  # every failure is one line on stderr and exit 1
        message = str(e) if isinstance(e, ToolError) else f"{type(e).__name__}: {e}"
        print("error: " + " ".join(message.split()), file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
