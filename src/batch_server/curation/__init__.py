"""From results to a golden dataset: annotations (:mod:`.annotations`, the only writer of
annotation rows), the requests they are about (:mod:`.requests`), collections, exports and
the Label Studio round trip."""
