// latentserve gateway: Bearer-key check for nginx (njs), the gateway's only logic.
//
// The keys file (a Kubernetes Secret mounted as a directory) holds one key per
// line; blank lines and lines starting with # are ignored, as are lines shorter
// than MIN_KEY_LENGTH (a typo must not open the API). It is read on every request:
// a Secret update (the kubelet swaps the file atomically) or an edited file takes
// effect on the next request without a reload, so a rotation never closes a
// connection. The file lives on tmpfs and is a few lines long, so reading it is
// cheap (docs/deploy.md gives the measured added latency).
//
// Keys are compared by their SHA-256, so the comparison time says nothing about
// how much of a guessed key was right. $auth_key_id (the first 12 hex digits of
// the matching key's SHA-256, "-" otherwise) goes to the access log: an operator
// sees which key clients still use during a rotation without the key in the log.
// Any error (file missing, unreadable) refuses the request: fail closed.

const fs = require('fs');
const crypto = require('crypto');

const MIN_KEY_LENGTH = 16;

function digest(text) {
    return crypto.createHash('sha256').update(text).digest('hex');
}

function validKeyDigests(path) {
    const digests = [];
    const lines = fs.readFileSync(path, 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
        const key = lines[i].trim();
        if (key.length >= MIN_KEY_LENGTH && key[0] !== '#') {
            digests.push(digest(key));
        }
    }
    return digests;
}

// js_set handler: "1" when the Authorization header carries a listed key, else "0".
function check(r) {
    r.variables.auth_key_id = '-';
    const header = r.headersIn['Authorization'] || '';
    const match = /^Bearer[ ]+([^ ]+)[ ]*$/i.exec(header);
    if (!match) {
        return '0';
    }
    let digests;
    try {
        digests = validKeyDigests(r.variables.gateway_keys_file);
    } catch (e) {
        r.error('gateway: cannot read the keys file ' + r.variables.gateway_keys_file + ': ' + e);
        return '0';
    }
    const presented = digest(match[1]);
    for (let i = 0; i < digests.length; i++) {
        if (digests[i] === presented) {
            r.variables.auth_key_id = presented.slice(0, 12);
            return '1';
        }
    }
    return '0';
}

export default { check };
