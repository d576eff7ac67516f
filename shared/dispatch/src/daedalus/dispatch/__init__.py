"""daedalusd core: the message-handler registry, the daemon and its logging."""
