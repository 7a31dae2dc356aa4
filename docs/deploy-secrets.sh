#!/bin/sh
# Makes ./secrets/ for docker-compose.yml (docs/deploy.md): one file per secret. Run from the directory holding
# docker-compose.yml. Existing files are never overwritten (a new credential key would make every stored
# credential unreadable); delete one on purpose to regenerate it.
#
# Generated: postgres_password, secret_key, credential_keys (a Fernet key), audit_checkpoint_key.
# Created empty, to fill in if you use them: metrics_token, slack_bot_token, slack_signing_secret,
# email_host_password. An empty file means "not set".
#
# The directory is private to you (0700); the files inside are 0644 because the containers read them as their own
# users (the app runs as uid 10001, PostgreSQL as uid 999) and a compose bind mount keeps the host's mode.
set -eu

dir=secrets
mkdir -p "$dir"
chmod 700 "$dir"

make_secret() {  # name, python expression printing the value (empty: an empty file)
    file="$dir/$1"
    if [ -e "$file" ]; then
        echo "kept      $file"
        return
    fi
    if [ -n "$2" ]; then
        python3 -c "import base64, os, secrets; print($2)" > "$file"
        echo "generated $file"
    else
        : > "$file"
        echo "created   $file (empty: fill it in to use it)"
    fi
    chmod 644 "$file"
}

make_secret postgres_password "secrets.token_urlsafe(32)"
make_secret secret_key "secrets.token_urlsafe(50)"
make_secret credential_keys "base64.urlsafe_b64encode(os.urandom(32)).decode()"  # a Fernet key
make_secret audit_checkpoint_key "secrets.token_urlsafe(32)"
make_secret metrics_token ""
make_secret slack_bot_token ""
make_secret slack_signing_secret ""
make_secret email_host_password ""
