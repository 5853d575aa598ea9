package identity

// Waiters reports how many verifications joined a JWKS fetch of iss that
// another verification started (the single-flight counter).
func (v *Verifier) Waiters(iss string) int {
	is := v.issuers[iss]
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.waiters
}
