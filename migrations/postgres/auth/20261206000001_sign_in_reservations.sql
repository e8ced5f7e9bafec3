-- Safe with replicas (issue 15).

-- Sign-in attempts whose password is being checked right now. Every attempt reserves its place
-- before the check (failures + pending may not pass the limit), so concurrent guesses cannot get
-- more checks than the limit; a wrong password turns its reservation into a failure, anything
-- else gives it back.
ALTER TABLE sign_in_failures ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
