package kserve

// The tests go through the server's own entry points: DecodeLimited for requests (here with a
// body in one part and no limits) and ResponseParts for responses (here joined into one body,
// as a client receives it).

func decodeRequest(body []byte) (*InferRequest, error) { return decode(body, -1) }

func decode(body []byte, headerLength int) (*InferRequest, error) {
	return DecodeLimited([][]byte{body}, headerLength, Limits{})
}

// encodeResponse appends the body ResponseParts describes to dst and returns it with the length
// of its JSON part, -1 when it is all JSON.
func encodeResponse(dst []byte, r *InferResponse) (body []byte, headerLength int) {
	start := len(dst)
	body, parts := ResponseParts(dst, r)
	if parts == nil {
		return body, -1
	}
	headerLength = len(body) - start
	for _, p := range parts {
		body = append(body, p...)
	}
	return body, headerLength
}
