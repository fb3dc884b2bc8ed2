"""A demo storefront for anonid: favourites kept in anonid's profile data, sessions verified offline."""
