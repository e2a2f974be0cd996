from django import forms

from testproject.shop.cart import MAX_QUANTITY


class AddToCartForm(forms.Form):
    quantity = forms.IntegerField(min_value=1, max_value=MAX_QUANTITY, initial=1)
