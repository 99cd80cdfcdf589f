package transports

// RabbitMQLocalAddr returns the local address (host:port) of r's current
// connection, or "" while it is down; tests use it to find the connection
// on the broker and close it.
func RabbitMQLocalAddr(r *RabbitMQ) string {
	conn, err := r.conn.current()
	if err != nil {
		return ""
	}
	return conn.LocalAddr().String()
}
