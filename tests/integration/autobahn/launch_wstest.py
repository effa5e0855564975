# Python 2.7: start wstest with every listening socket bound to 127.0.0.1.
# The fuzzing server's listenWS() binds all interfaces whatever its URL says.
import sys

from twisted.internet import reactor

_listen_tcp = reactor.listenTCP


def _listen_loopback(port, factory, backlog=50, interface=""):
    return _listen_tcp(port, factory, backlog, "127.0.0.1")


reactor.listenTCP = _listen_loopback

from autobahntestsuite.wstest import run  # noqa: E402

sys.argv[0] = "wstest"
sys.exit(run())
