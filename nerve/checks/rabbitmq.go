package checks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// RabbitMQ is Airbnb's rabbitmq check (after RabbitMQ management's
// aliveness test): log in over AMQP 0-9-1, declare the queue (default
// "nerve"), publish a message to it through the default exchange
// (mandatory, expiring in 2 s) and get it back with an ack. Healthy when
// the message comes back.
//
// It speaks the few AMQP methods it needs itself, so nerve takes no AMQP
// client library for one check.
type RabbitMQ struct {
	Addr               string
	Username, Password string // default guest, guest
	Vhost              string // default "/"
	Queue              string // default "nerve"
	name               string
}

// Name implements Check.
func (r *RabbitMQ) Name() string { return r.name }

// AMQP 0-9-1 class and method ids, and frame types.
const (
	amqpFrameMethod    = 1
	amqpFrameHeader    = 2
	amqpFrameBody      = 3
	amqpFrameHeartbeat = 8
	amqpFrameEnd       = 0xCE

	amqpConnection = 10
	amqpChannel    = 20
	amqpQueue      = 50
	amqpBasic      = 60
)

type amqpMethod struct{ class, method uint16 }

var (
	connStart    = amqpMethod{amqpConnection, 10}
	connStartOk  = amqpMethod{amqpConnection, 11}
	connTune     = amqpMethod{amqpConnection, 30}
	connTuneOk   = amqpMethod{amqpConnection, 31}
	connOpen     = amqpMethod{amqpConnection, 40}
	connOpenOk   = amqpMethod{amqpConnection, 41}
	connClose    = amqpMethod{amqpConnection, 50}
	connCloseOk  = amqpMethod{amqpConnection, 51}
	chanOpen     = amqpMethod{amqpChannel, 10}
	chanOpenOk   = amqpMethod{amqpChannel, 11}
	chanClose    = amqpMethod{amqpChannel, 40}
	queueDeclare = amqpMethod{amqpQueue, 10}
	queueDeclOk  = amqpMethod{amqpQueue, 11}
	basicPublish = amqpMethod{amqpBasic, 40}
	basicReturn  = amqpMethod{amqpBasic, 50}
	basicGet     = amqpMethod{amqpBasic, 70}
	basicGetOk   = amqpMethod{amqpBasic, 71}
	basicGetEmpt = amqpMethod{amqpBasic, 72}
	basicAck     = amqpMethod{amqpBasic, 80}
)

// amqpConn is one connection with channel 1 open.
type amqpConn struct {
	c  net.Conn
	rd *bufio.Reader
}

// frame is one frame read.
type frame struct {
	typ     byte
	channel uint16
	payload []byte
}

func (a *amqpConn) write(typ byte, channel uint16, payload []byte) error {
	var b bytes.Buffer
	b.WriteByte(typ)
	binary.Write(&b, binary.BigEndian, channel)
	binary.Write(&b, binary.BigEndian, uint32(len(payload)))
	b.Write(payload)
	b.WriteByte(amqpFrameEnd)
	_, err := a.c.Write(b.Bytes())
	return err
}

func (a *amqpConn) send(channel uint16, m amqpMethod, args []byte) error {
	p := binary.BigEndian.AppendUint16(nil, m.class)
	p = binary.BigEndian.AppendUint16(p, m.method)
	return a.write(amqpFrameMethod, channel, append(p, args...))
}

func (a *amqpConn) read() (frame, error) {
	var h [7]byte
	if _, err := io.ReadFull(a.rd, h[:]); err != nil {
		return frame{}, err
	}
	size := binary.BigEndian.Uint32(h[3:])
	if size > 1<<20 {
		return frame{}, fmt.Errorf("amqp: frame of %d bytes", size)
	}
	p := make([]byte, size+1)
	if _, err := io.ReadFull(a.rd, p); err != nil {
		return frame{}, err
	}
	if p[size] != amqpFrameEnd {
		return frame{}, errors.New("amqp: bad frame end")
	}
	return frame{typ: h[0], channel: binary.BigEndian.Uint16(h[1:]), payload: p[:size]}, nil
}

// expect reads frames until a method one (skipping heartbeats) and
// returns its arguments; it must be one of want. A Close from the server
// is an error with its reply text (bad credentials, an unknown vhost, a
// queue declared differently).
func (a *amqpConn) expect(want ...amqpMethod) (amqpMethod, []byte, error) {
	for {
		f, err := a.read()
		if err != nil {
			return amqpMethod{}, nil, err
		}
		if f.typ == amqpFrameHeartbeat {
			continue
		}
		if f.typ != amqpFrameMethod || len(f.payload) < 4 {
			return amqpMethod{}, nil, fmt.Errorf("amqp: unexpected frame type %d", f.typ)
		}
		m := amqpMethod{binary.BigEndian.Uint16(f.payload), binary.BigEndian.Uint16(f.payload[2:])}
		args := f.payload[4:]
		for _, w := range want {
			if m == w {
				return m, args, nil
			}
		}
		if m == connClose || m == chanClose {
			code, text := uint16(0), ""
			if len(args) >= 3 {
				code = binary.BigEndian.Uint16(args)
				text, _ = shortstr(args[2:])
			}
			return m, nil, fmt.Errorf("amqp: server closed the %s: %d %s", map[bool]string{true: "connection", false: "channel"}[m == connClose], code, text)
		}
		return m, nil, fmt.Errorf("amqp: unexpected method %d.%d", m.class, m.method)
	}
}

func appendShortstr(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }

func appendLongstr(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

func shortstr(b []byte) (string, []byte) {
	if len(b) == 0 || len(b) < 1+int(b[0]) {
		return "", nil
	}
	return string(b[1 : 1+b[0]]), b[1+b[0]:]
}

// readContent reads the header and body frames of a delivered message.
func (a *amqpConn) readContent() ([]byte, error) {
	f, err := a.read()
	if err != nil {
		return nil, err
	}
	if f.typ != amqpFrameHeader || len(f.payload) < 12 {
		return nil, errors.New("amqp: no content header after get-ok")
	}
	size := binary.BigEndian.Uint64(f.payload[4:])
	var body []byte
	for uint64(len(body)) < size {
		f, err := a.read()
		if err != nil {
			return nil, err
		}
		if f.typ != amqpFrameBody {
			return nil, errors.New("amqp: missing content body")
		}
		body = append(body, f.payload...)
	}
	return body, nil
}

const rabbitMessage = "nerve test message"

// Check implements Check.
func (r *RabbitMQ) Check(ctx context.Context) error {
	c, err := dialCheck(ctx, r.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	a := &amqpConn{c: c, rd: bufio.NewReader(c)}
	user, pass, vhost, queue := or(r.Username, "guest"), or(r.Password, "guest"), or(r.Vhost, "/"), or(r.Queue, "nerve")

	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	if _, _, err := a.expect(connStart); err != nil {
		return fmt.Errorf("connection.start: %w", err)
	}
	// client-properties (empty table), mechanism, response, locale
	args := binary.BigEndian.AppendUint32(nil, 0)
	args = appendShortstr(args, "PLAIN")
	args = appendLongstr(args, "\x00"+user+"\x00"+pass)
	args = appendShortstr(args, "en_US")
	if err := a.send(0, connStartOk, args); err != nil {
		return err
	}
	_, tune, err := a.expect(connTune)
	if err != nil {
		// RabbitMQ closes the socket on bad credentials.
		return fmt.Errorf("login as %q: %w", user, err)
	}
	if len(tune) < 8 {
		return errors.New("amqp: short connection.tune")
	}
	// Same channel-max and frame-max, no heartbeats (one short check).
	args = append(append([]byte{}, tune[:6]...), 0, 0)
	if err := a.send(0, connTuneOk, args); err != nil {
		return err
	}
	args = appendShortstr(nil, vhost)
	args = appendShortstr(args, "")
	args = append(args, 0)
	if err := a.send(0, connOpen, args); err != nil {
		return err
	}
	if _, _, err := a.expect(connOpenOk); err != nil {
		return fmt.Errorf("vhost %q: %w", vhost, err)
	}
	defer func() {
		// A polite close: RabbitMQ logs a warning for every connection
		// dropped without one.
		args := binary.BigEndian.AppendUint16(nil, 200)
		args = appendShortstr(args, "nerve check done")
		args = binary.BigEndian.AppendUint32(args, 0)
		if a.send(0, connClose, args) == nil {
			a.expect(connCloseOk)
		}
	}()
	if err := a.send(1, chanOpen, appendShortstr(nil, "")); err != nil {
		return err
	}
	if _, _, err := a.expect(chanOpenOk); err != nil {
		return fmt.Errorf("channel.open: %w", err)
	}
	// queue.declare: reserved short, name, no flags, no arguments.
	args = appendShortstr([]byte{0, 0}, queue)
	args = append(args, 0)
	args = binary.BigEndian.AppendUint32(args, 0)
	if err := a.send(1, queueDeclare, args); err != nil {
		return err
	}
	if _, _, err := a.expect(queueDeclOk); err != nil {
		return fmt.Errorf("queue.declare %q: %w", queue, err)
	}
	// basic.publish to the default exchange, routing key = queue, mandatory.
	args = appendShortstr([]byte{0, 0}, "")
	args = appendShortstr(args, queue)
	args = append(args, 1)
	if err := a.send(1, basicPublish, args); err != nil {
		return err
	}
	// Content header: class, weight, body size, flags (expiration only).
	hdr := binary.BigEndian.AppendUint16(nil, amqpBasic)
	hdr = binary.BigEndian.AppendUint16(hdr, 0)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(len(rabbitMessage)))
	hdr = binary.BigEndian.AppendUint16(hdr, 1<<8)
	hdr = appendShortstr(hdr, "2000")
	if err := a.write(amqpFrameHeader, 1, hdr); err != nil {
		return err
	}
	if err := a.write(amqpFrameBody, 1, []byte(rabbitMessage)); err != nil {
		return err
	}
	// basic.get with acks: the channel handles the publish first.
	args = appendShortstr([]byte{0, 0}, queue)
	args = append(args, 0)
	if err := a.send(1, basicGet, args); err != nil {
		return err
	}
	m, got, err := a.expect(basicGetOk, basicGetEmpt, basicReturn)
	if err != nil {
		return fmt.Errorf("basic.get %q: %w", queue, err)
	}
	switch m {
	case basicReturn:
		return fmt.Errorf("publish to queue %q returned: unroutable", queue)
	case basicGetEmpt:
		return fmt.Errorf("queue %q: the message published is not there", queue)
	}
	if len(got) < 8 {
		return errors.New("amqp: short basic.get-ok")
	}
	tag := binary.BigEndian.Uint64(got)
	if _, err := a.readContent(); err != nil {
		return err
	}
	return a.send(1, basicAck, append(binary.BigEndian.AppendUint64(nil, tag), 0))
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
