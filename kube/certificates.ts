// X.509 certificates made in process: the images carry no openssl, and node:crypto can sign
// but cannot build a certificate. ECDSA P-256 throughout: keys are generated in a millisecond,
// so rotating them costs nothing.

import 'reflect-metadata'; // @peculiar/x509 resolves its parsers through tsyringe, which needs it
import * as x509 from '@peculiar/x509';
import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A certificate and its private key, both PEM. */
export interface KeyPair {
  cert: string;
  key: string;
}

interface Validity {
  now: number;
  lifetimeMs: number;
}

// a minute of slack for clocks a little behind the issuer's
const notBefore = (now: number) => new Date(now - 60_000);
const serialNumber = () => randomBytes(16).toString('hex').replace(/^[89a-f]/, '1');
const dn = (commonName: string) => `CN=${commonName.replaceAll(/[,+=\\<>#;"]/g, '_')}`;

async function keyPair(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

async function pemKey(key: webcrypto.CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function importKey(pem: string): Promise<webcrypto.CryptoKey> {
  return (await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(pem), EC, false, ['sign'])) as webcrypto.CryptoKey;
}

/** A self-signed certificate for `commonName` with these extensions, and its key. */
async function selfSigned(commonName: string, { now, lifetimeMs }: Validity, extensions: (keys: webcrypto.CryptoKeyPair) => Promise<x509.Extension[]> | x509.Extension[]): Promise<KeyPair> {
  const keys = await keyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: dn(commonName),
    notBefore: notBefore(now),
    notAfter: new Date(now + lifetimeMs),
    keys,
    signingAlgorithm: EC,
    extensions: await extensions(keys),
  });
  return { cert: cert.toString('pem'), key: await pemKey(keys.privateKey) };
}

/** A self-signed CA that signs leaf certificates only (path length 0). */
export const createCa = (commonName: string, validity: Validity): Promise<KeyPair> =>
  selfSigned(commonName, validity, async (keys) => [
    new x509.BasicConstraintsExtension(true, 0, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ]);

/** A client certificate (TLS client authentication only) for `commonName`, signed by `ca`. */
export async function issueClientCert(ca: KeyPair, commonName: string, { now, lifetimeMs }: Validity): Promise<KeyPair> {
  const keys = await keyPair();
  const issuer = new x509.X509Certificate(ca.cert);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: dn(commonName),
    issuer: issuer.subject,
    notBefore: notBefore(now),
    notAfter: new Date(Math.min(now + lifetimeMs, issuer.notAfter.getTime())),
    publicKey: keys.publicKey,
    signingKey: await importKey(ca.key),
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], true),
      await x509.AuthorityKeyIdentifierExtension.create(issuer, false),
    ],
  });
  return { cert: cert.toString('pem'), key: await pemKey(keys.privateKey) };
}

/**
 * A self-signed serving certificate for `addresses` (IPs or DNS names). Its clients pin it
 * (they trust this one certificate, published where only its owner can write), so no CA
 * stands behind it and nothing else can be signed with its key.
 */
export function selfSignedServerCert(commonName: string, addresses: string[], validity: Validity): Promise<KeyPair> {
  const ip = (a: string) => /^[\d.]+$/.test(a) || a.includes(':');
  return selfSigned(commonName, validity, () => [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], true),
    new x509.SubjectAlternativeNameExtension(addresses.map((a) => ({ type: ip(a) ? 'ip' : 'dns', value: a }))),
  ]);
}

/** One PEM bundle of certificates, each on lines of its own (OpenSSL reads no other). */
export const pemBundle = (certs: string[]): string => certs.map((c) => `${c.trim()}\n`).join('');

/** The certificates of a PEM bundle, each as its own PEM. */
export const pemCertificates = (bundle: string): string[] => bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];

/** Validity of a PEM certificate, in ms since the epoch. */
export function validity(pem: string): { notBefore: number; notAfter: number } {
  const cert = new X509Certificate(pem);
  return { notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo) };
}

/** Past `fraction` of its lifetime (renew at a half: the old one still has as long to go). */
export function pastFraction(pem: string, now: number, fraction: number): boolean {
  const { notBefore: from, notAfter: to } = validity(pem);
  return now >= from + (to - from) * fraction;
}
