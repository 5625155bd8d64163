package transport

import "io"

// StatusClientClosedRequest answers a request whose body ended early: the
// client (or a proxy) closed the connection mid-body. nginx's code for it;
// nobody reads the reply, it is for logs and metrics, which must not count
// a client's failure as the server's.
const StatusClientClosedRequest = 499

// bodyError is a failure to read a request body: the client's doing.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// clientBody marks read errors of a request body as the client's, so
// status can tell them from the server's own failures. The end of the body
// and the server's own deadline pass through as they are.
type clientBody struct{ io.ReadCloser }

func (b clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !isTimeout(err) {
		err = &bodyError{err}
	}
	return n, err
}
