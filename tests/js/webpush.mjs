// The Web Push wire format checked with the npm `web-push` library that Node.js servers use, and
// its `http_ece`, independently of services/push's Rust code (services/push/tests/providers/npm.rs).
// Reads one JSON request on stdin and prints one JSON answer:
//   {"send": {subscription, payload, ttl, vapid: {subject, publicKey, privateKey}}}
//     sends with web-push (aes128gcm, VAPID) and prints {"statusCode"};
//   {"decrypt": {body (base64), privateKey (base64url scalar), authSecret (base64url)}}
//     decrypts an aes128gcm message as a browser would and prints {"plaintext"}.
// The push service's CA comes from NODE_EXTRA_CA_CERTS.
import crypto from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const webpush = require('web-push');
const ece = require('http_ece');

let text = '';
for await (const chunk of process.stdin) text += chunk;
const request = JSON.parse(text);

if (request.send) {
  const { subscription, payload, ttl, vapid } = request.send;
  try {
    const result = await webpush.sendNotification(subscription, payload, {
      TTL: ttl,
      contentEncoding: 'aes128gcm',
      vapidDetails: vapid,
    });
    console.log(JSON.stringify({ statusCode: result.statusCode }));
  } catch (error) {
    console.log(JSON.stringify({ statusCode: error.statusCode ?? null, error: String(error) }));
  }
} else if (request.decrypt) {
  const { body, privateKey, authSecret } = request.decrypt;
  const receiver = crypto.createECDH('prime256v1');
  receiver.setPrivateKey(Buffer.from(privateKey, 'base64url'));
  const plaintext = ece.decrypt(Buffer.from(body, 'base64'), {
    version: 'aes128gcm',
    privateKey: receiver,
    authSecret,
  });
  console.log(JSON.stringify({ plaintext: plaintext.toString('utf8') }));
} else {
  throw new Error('expected {"send": …} or {"decrypt": …}');
}
